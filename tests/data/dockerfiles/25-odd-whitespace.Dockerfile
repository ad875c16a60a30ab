

   FROM    alpine:3.19    AS    Odd
	RUN	echo	tabs
RUN   echo   spaces   \   
      and   more   
  #   indented comment
COPY		a		b		/x/   
ENV  K1=v1   K2=v2  
	
CMD     [ "sh" ,  "-c" , "echo  hi" ]   
